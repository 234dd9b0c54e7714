# feedsvc: a slim, non-root image whose entry point is `feedsvc run`.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY feedsvc ./feedsvc
RUN python -m venv /opt/feedsvc \
 && /opt/feedsvc/bin/pip install --no-cache-dir .

FROM python:3.11-slim
RUN useradd --system --create-home --home-dir /var/lib/feedsvc feedsvc
COPY --from=build /opt/feedsvc /opt/feedsvc
COPY templates /opt/feedsvc/templates
COPY config /etc/feedsvc
ENV PATH=/opt/feedsvc/bin:$PATH \
    FEEDSVC_TEMPLATES=/opt/feedsvc/templates \
    PYTHONUNBUFFERED=1
USER feedsvc
WORKDIR /var/lib/feedsvc
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s \
  CMD python -c "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=4).status != 200)"
ENTRYPOINT ["feedsvc", "run"]
CMD ["-c", "/etc/feedsvc/feedsvc.yaml"]
