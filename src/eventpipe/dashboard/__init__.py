"""The dashboard: server-rendered pages at `/` with a small script layer, served by the api.

Kept free of imports: api/deps.py reads the session cookie's name from dashboard/cookies.py.
"""
