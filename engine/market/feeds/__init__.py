"""Live market-data feeds: one small interface (``engine.market.feeds.base.Feed``), concrete
adapters for Binance's combined websocket stream and for ccxt.pro venues, and the REST
client for depth snapshots, klines and exchange filters."""
