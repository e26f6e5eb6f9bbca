"""What syncd keeps on this machine between runs: `statedir.StateDir`, the state
directory's layout (a run's is `Config.state`), and `memory.SyncMemory`, the sync memory.
"""
