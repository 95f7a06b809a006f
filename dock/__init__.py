"""OpenBWV dock: the docking station that uploads cradled cameras and frees them against receipts.

    protocol.py   the dock <-> camera link protocol (pure; the camera uses it too)
    channel.py    messages over a port: numbering, replay guard, reply matching
    ports.py      pyserial ports, and pty pairs for emulation
    clocksync.py  NTP-style clock arithmetic (pure)
    bay.py        one bay's session with its camera
    upload.py     the Uploader interface; DirectoryUploader (tests, emulation)
    watch.py      cameras' storage appearing and going (watchdog)
    daemon.py     every bay at once, with retries
    progress.py   bytes, rate, ETA on the terminal and in the log
    events.py     structured key=value log lines
    state.py      a status file per bay, for `bwv dock status`
    config.py     the bays file
    command.py    `bwv dock`
    errors.py     the exception tree

docs/dock-protocol.md specifies the link.
"""
