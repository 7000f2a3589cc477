"""Urza as a service: the blueprint library over HTTP, judged in the background by Tezzeret.

`urza.app` (FastAPI, the `[urza]` extra) serves one SQLite library; `urza.worker`
judges its submissions in a separate process; `urza.client.RemoteLibrary` is the
library's interface over HTTP (standard library only), and `urza.client.open_library`
opens a file or a URL alike.
"""
