# vr-engine with the tuned pjsua2 (1,024 calls, epoll, IPv6: build/pjsua2/README.md).
#
# Stage 1 builds the pjsua2 wheel with the same script `make pjsua2` runs, from the pjproject
# 2.15.1 release tarball pinned by sha256 (PJSUA2_SOURCE=upstream: needs internet at build
# time). Stage 2 installs it and the engine, runs as a non-root user, serves the demo.
# Not built in CI: this project's CI machines have no Docker engine (CI exercises the same
# build script with Debian's ring source package instead).

FROM python:3.11-slim-bookworm AS pjsua2
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential swig perl curl ca-certificates \
      uuid-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY build/pjsua2/ build/pjsua2/
RUN python -m venv /opt/build-venv \
 && wheel="$(PYTHON=/opt/build-venv/bin/python PJSUA2_SOURCE=upstream PJSUA2_CACHE=/tmp/pjsua2 \
      bash build/pjsua2/build.sh wheel)" \
 && mkdir -p /wheels && cp "$wheel" /wheels/

FROM python:3.11-slim-bookworm
RUN apt-get update \
 && apt-get install -y --no-install-recommends libsndfile1 \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --create-home --home-dir /home/vr vr \
 && mkdir /data && chown vr:vr /data

WORKDIR /app
COPY pyproject.toml README.md ./
COPY engine engine
COPY prompts prompts
COPY build/pjsua2/selfcheck.py /tmp/selfcheck.py
COPY --from=pjsua2 /wheels/ /tmp/wheels/
# The tuned wheel first: its version (2.15.1.post1+vr…) satisfies pyproject's
# pjsua2-python==2.15.1.post1, so installing the engine keeps it. Then check that the image
# really carries it (pjsua_call_get_max_count() = 1024).
RUN pip install --no-cache-dir /tmp/wheels/*.whl \
 && pip install --no-cache-dir -e . \
 && python /tmp/selfcheck.py --require-tuned \
 && rm -rf /tmp/wheels /tmp/selfcheck.py

ENV VR_PROMPTS_DIR=/app/prompts
USER vr
EXPOSE 8922/udp 8922/tcp 8923/tcp
VOLUME /data

# /healthz is the API's one route without a token
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
  CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8923/healthz', timeout=4)" || exit 1

# SIP must publish an address callers can reach: SIP_HOST, or the container's own address.
CMD ["sh", "-c", "exec vr-engine serve --demo --data-dir /data --http-host 0.0.0.0 --sip-host ${SIP_HOST:-$(hostname -i | cut -d' ' -f1)}"]
