"""serd: speech emotion recognition for small devices."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("serd")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+source"
