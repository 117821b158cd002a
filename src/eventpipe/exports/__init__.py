"""Exports of archived events: file formats, and the store the finished files are served from."""
