"""The release number (one place: the package, --version and build info read it)."""

__version__ = "0.1.0"
