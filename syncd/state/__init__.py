"""What syncd keeps on this machine between runs: the state directory and what lives in
it. `memory` is the sync memory (`memory.sqlite`).
"""
