# vr-engine: a first, honest image. It installs the package with the PyPI pjsua2 wheel
# (4 concurrent calls; see README "Capacity") and serves the demo receptionist.
# Not built in CI: this project's CI machines have no Docker engine.
FROM python:3.11-slim-bookworm

RUN apt-get update \
 && apt-get install -y --no-install-recommends libsndfile1 \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY pyproject.toml README.md ./
COPY engine engine
COPY prompts prompts
RUN pip install --no-cache-dir -e .

ENV VR_PROMPTS_DIR=/app/prompts
EXPOSE 8922/udp 8922/tcp 8923/tcp
VOLUME /data

# SIP must publish an address callers can reach: SIP_HOST, or the container's own address.
CMD ["sh", "-c", "exec vr-engine serve --demo --data-dir /data --http-host 0.0.0.0 --sip-host ${SIP_HOST:-$(hostname -i | cut -d' ' -f1)}"]
