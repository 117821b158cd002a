"""Alert webhooks: Standard Webhooks signing, the SSRF guard and one delivery attempt."""
