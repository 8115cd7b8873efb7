# syntax=docker/dockerfile:1
# Build: docker build -t chatgpt-gateway .
# Run:   docker run -p 8080:8080 -e GO_CHATGPT_API_PROXY=socks5://host:1080 chatgpt-gateway

FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY gateway ./gateway
COPY plugins ./plugins
# Wheels for the gateway and every dependency, so the runtime stage needs no compiler.
RUN pip wheel --no-cache-dir --wheel-dir /wheels ".[redis,speed]"

FROM python:3.11-slim
RUN useradd --create-home --uid 10001 gateway
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-index --find-links=/wheels "chatgpt-gateway[redis,speed]" \
    && rm -rf /wheels
USER gateway
WORKDIR /home/gateway
# The default config is the one inside the package; mount your own at
# /home/gateway/config.toml (it is read from the working directory) or set GATEWAY_CONFIG.
ENV PORT=8080 HOST=0.0.0.0 PYTHONUNBUFFERED=1
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=3s --start-period=5s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('PORT', '8080') + '/healthz', timeout=2)"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["gateway"]
CMD ["run"]
