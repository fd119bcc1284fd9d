"""A tool module that does not import: it needs a package that is not installed."""

import netra_no_such_package  # noqa: F401
