"""The ``genprm`` command line: a thin layer that fills config records and calls the public API."""
