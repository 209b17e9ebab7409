"""Inputs: bytes from files, stdin, pipes and the simulator, as chunks with their arrival.

In: paths and file descriptors. Out: chunks of bytes stamped with the moment they were
read (``sources.ChunkReader``), cut into lines by ``framing``. ``arrivals`` is the reader
thread that stamps pipe chunks (and reads stdin from the process's first moment);
``files`` knows a file's identity and where a restart resumes it; ``follow`` follows a
file like ``tail -F`` and reads on the files rotated away from it; ``simulator`` makes
the demo's events; ``unusable`` explains a run in which no line was usable.
"""
