"""The pure core: doctor-sessions, shards and their rules, snapshots, the clock, the request
protocol and placement. Synchronous, time passed in; imports no ray, redis or asyncio (a test
loads it in a fresh interpreter and checks)."""
