"""Telephony: the only package that imports pjsua2.

`base` is the vocabulary between the runtime and a SIP stack (events out, commands in, the
`Telephony` protocol); `pjsua` the adapter on pjsua2 (one thread owns the endpoint), with its
pjsua2 subclasses (`shims`), configuration (`endpoint`) and pure parts (`dtmf`, `playback`,
`sipmsg`); `pjsip` what it reaches below pjsua2 through ctypes (the door in front of pjsua, the
rx-data reader, symbols, build probes); `guard` keeps exceptions out of pjsua2's callbacks;
`caller` is the test caller (`vr-engine dial`).
"""
