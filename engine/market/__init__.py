"""Market data: parsing, capture files, recording, order books, bars, features, feeds."""
