"""Command-line entry points: `fink-pipeline` and `fink_datatransfer`."""
