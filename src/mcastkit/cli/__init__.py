"""The ``mcast`` command line tool: argument parsing and rendering over the public API."""
