"""(interface filled in by the CLI commit)"""
