# OpenSIPS 3.4 for manifests/opensips.yaml: the example needs db_text and dispatcher (in the
# "opensips" package) plus httpd and mi_http, which only the "opensips-http-modules" package
# carries (the official opensips/opensips image installs just "opensips" unless built with
# --build-arg OPENSIPS_EXTRA_MODULES=opensips-http-modules).
# Build:  docker build -f docker/opensips.Dockerfile -t ivrbot/opensips:0.1.0 docker
FROM debian:12.12-slim
ARG OPENSIPS_VERSION=3.4
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl gnupg \
 && curl -fsSL https://apt.opensips.org/opensips-org.gpg -o /usr/share/keyrings/opensips-org.gpg \
 && echo "deb [signed-by=/usr/share/keyrings/opensips-org.gpg] https://apt.opensips.org bookworm ${OPENSIPS_VERSION}-releases" \
      > /etc/apt/sources.list.d/opensips.list \
 && apt-get update \
 && apt-get install -y --no-install-recommends opensips opensips-http-modules \
 && apt-get purge -y curl gnupg && apt-get autoremove -y && rm -rf /var/lib/apt/lists/* \
 && test -f /usr/lib/x86_64-linux-gnu/opensips/modules/mi_http.so -o -f /usr/lib/opensips/modules/mi_http.so
# The example pod runs it as 10010 with a read-only root filesystem.
USER 10010
ENTRYPOINT ["/usr/sbin/opensips"]
CMD ["-F", "-f", "/etc/opensips/opensips.cfg"]
