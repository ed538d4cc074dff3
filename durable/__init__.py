"""Durable local files: the one atomic write of energylake (temp file, fsync, rename, folder
fsync) and the folder fsync. Imports nothing of ours; every package that replaces a file on
local disk uses it (the lake's local store, the landing log, the gateway's books and state,
provisioning, lineage's index, the status textfile)."""
