"""tradedesk engine: feeds, order book, bars, features, fusion, risk, executors, ledger.

Never imports textual. The TUI and the headless runner are adapters over
:class:`engine.core.engine.Engine`.
"""
