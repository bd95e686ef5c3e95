"""The bot's SIP endpoint: sans-IO user agent core (useragent) and its asyncio UDP shell (server)."""
