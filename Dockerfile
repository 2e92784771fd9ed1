# syntax=docker/dockerfile:1
# The operator image: `docker build -t localhost/sandbox-operator:0.1.0 .`
# Without Docker, `python -m localcluster.operator_image build` assembles the same layout from Debian packages.
#
# python:3.11-slim pinned by digest. The digest was taken from public Dockerfiles, not checked against Docker Hub
# here (no registry access): verify it with `docker buildx imagetools inspect python:3.11-slim` and update it.
ARG PYTHON_IMAGE=python:3.11-slim@sha256:9c900dea9e8fb7e16277c179b555cc72d29a352dbc33cff48ad5a0412fd5bfc7

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore
WORKDIR /src
# Dependencies first (pinned closure, binary wheels only), so a source change reuses this layer.
COPY image/requirements.txt image/requirements.txt
RUN pip install --only-binary=:all: --no-deps --target /opt/sandbox-operator/site-packages -r image/requirements.txt
COPY pyproject.toml README.md ./
COPY operator ./operator
RUN pip install --no-deps --target /opt/sandbox-operator/site-packages . \
 && rm -rf /opt/sandbox-operator/site-packages/bin \
 && python -m compileall -q -j 0 --invalidation-mode unchecked-hash /opt/sandbox-operator/site-packages

FROM ${PYTHON_IMAGE}
# No package manager use, no compilers: drop the base image's pip/setuptools/wheel too.
RUN python -m pip uninstall -y -q pip setuptools wheel 2>/dev/null; \
    groupadd --gid 65532 nonroot && useradd --uid 65532 --gid 65532 --no-create-home --shell /bin/false nonroot
COPY --from=build --chown=0:0 /opt/sandbox-operator /opt/sandbox-operator
ENV PYTHONPATH=/opt/sandbox-operator/site-packages PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
USER 65532:65532
EXPOSE 8080 8081
ENTRYPOINT ["python", "-m", "sandbox_operator"]
