"""The sans-I/O protocol core: typed values and pure functions over bytes.

Nothing here opens a socket or a file, reads the clock, or keeps state between calls; time and
randomness come in as arguments where a test needs them exact. ``crypto`` is the only module
that imports the cryptographic backend.
"""
