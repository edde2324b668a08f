#!/bin/sh
# Regenerate every lab capture under pcaps/ and its <case>.truth.json, from scratch.
#
#   sudo pcaps/lab/make.sh                 # all scenarios
#   sudo pcaps/lab/make.sh dot/tls10 ...   # only some (area/case)
#
# Needs root (network namespaces, tcpdump). All traffic stays inside namespaces named dalab-*
# that the script creates and deletes. The lab CA key is kept outside the repository in
# $DALAB_STATE (default ~/.local/state/dotaudit-lab of the user running it); pcaps/lab/ca.pem is reused while that key exists.
# DALAB_KEEP=1 keeps the temporary work directory (certificates, logs, TLS key logs).
set -eu
cd "$(dirname "$0")/../.."

if [ "$(id -u)" -ne 0 ]; then
    echo "make.sh: run as root (sudo pcaps/lab/make.sh)" >&2
    exit 1
fi

need=""
for pair in unbound:unbound kdig:knot-dnsutils dig:bind9-dnsutils openssl:openssl \
            tcpdump:tcpdump ip:iproute2 ss:iproute2 tshark:tshark \
            python3:python3 ; do
    command -v "${pair%%:*}" >/dev/null 2>&1 || need="$need ${pair#*:}"
done
python3 -c 'import dns.message, cryptography' 2>/dev/null || need="$need python3-dnspython python3-cryptography"
if [ -n "$need" ]; then
    echo "make.sh: installing$need"
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $need
fi

status=0
python3 pcaps/lab/lab.py "$@" || status=$?
python3 pcaps/lab/readme.py
exit $status
