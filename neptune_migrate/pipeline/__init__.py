"""Export, import and the ledger: the logic shared by every source and destination."""
