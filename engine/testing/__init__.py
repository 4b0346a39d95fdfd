"""Tools for tests and demos: a local exchange that speaks Binance's wire format."""
