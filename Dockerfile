FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY worker ./worker
COPY mappers ./mappers
COPY schemas ./schemas
RUN pip install --no-cache-dir -e .
USER nobody
ENTRYPOINT ["timebok"]
