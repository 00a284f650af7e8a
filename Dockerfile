# The cardstream worker and CLI, for docker-compose.yml (Apache Kafka in production).
FROM python:3.11-slim
WORKDIR /opt/cardstream
COPY pyproject.toml README.md ./
COPY app ./app
COPY topics ./topics
COPY schemas ./schemas
RUN pip install --no-cache-dir -e . && useradd --system --uid 1000 cardstream \
    && mkdir -p /var/lib/cardstream && chown cardstream /var/lib/cardstream
USER cardstream
ENV CARDSTREAM_DATA_DIR=/var/lib/cardstream \
    CARDSTREAM_WEB_HOST=0.0.0.0 \
    CARDSTREAM_WEB_PORT=6066
EXPOSE 6066
ENTRYPOINT ["cardstream"]
CMD ["worker"]
