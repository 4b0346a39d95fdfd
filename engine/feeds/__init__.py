"""Live market-data feeds: one small interface (``engine.feeds.base.Feed``), concrete
adapters for Binance's combined websocket stream and for ccxt.pro venues, and the REST
client for depth snapshots, klines and exchange filters."""
