"""`serd dashboard`: a live web page of serd daemons, and an upload panel for recordings.

`state` keeps what was heard, `server` subscribes and serves (standard library
only), `cli` is the command; the page itself is `static/` (no build step).
"""
