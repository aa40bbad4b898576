"""vr-engine: an open virtual receptionist server.

Packages and modules, each owning one concern (the README's "Development" map has the rest):
`errors` (the exception tree), `rules` (masks, PIN policy), `model` (PortSIP's receptionist
model), `config`, `flow` (the pure call flow), `admission` (whether a new request may become
a call), `runtime` (the event loop joining it all), `records` (the typed call record),
`telephony` (the SIP stack), `store` (the SQLite store), `action_urls`, `api`, `prompts`,
`convert`/`uploads`, `server`/`cli`.
"""
