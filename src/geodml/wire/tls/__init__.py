"""Mutual TLS between coordinators and sites: certificates, credentials, identities.

Trust model
-----------
One deployment has one certificate authority (CA). Every site and every coordinator
gets its own key pair and a certificate signed by that CA:

* a **site** certificate (``OU=site``) has the extended key usage serverAuth and a
  subjectAltName listing the DNS names and IP addresses coordinators dial it by, plus
  its **identity name** ``<name>.site.geodml.invalid`` (:func:`site_identity_name`);
* a **coordinator** certificate (``OU=coordinator``) has the extended key usage
  clientAuth; its subject common name (CN) is the coordinator's identity.

A site server demands a client certificate (``require_client_auth=True``) and accepts
only certificates signed by the deployment CA; a coordinator accepts only a site
certificate signed by the same CA that carries the identity name of the site it meant
to reach (gRPC's ``grpc.ssl_target_name_override`` set to :func:`site_identity_name`),
whatever address it dialed, and then checks that the site's ``Describe`` answers with
that same name (:mod:`geodml.wire.transport`). Every site certificate is signed
by the same CA, so the CA alone does not say *which* site answered: the identity name
does. Only ``geodml certs issue --role site`` writes identity names, and it refuses
``--host`` values in the reserved ``geodml.invalid`` domain, so no certificate can
claim another site's identity, and a coordinator certificate (clientAuth, no identity
name) can never pose as a site.
Being signed by the CA is necessary but not sufficient: the site then compares the
client's CN (:func:`peer_identity`) with the allowed client identities of its policy
(``allowed_clients``) and refuses other callers with ``PERMISSION_DENIED`` naming the
rule (:class:`geodml.site.policy.Policy`). Site certificates
carry no clientAuth usage, so a site's key cannot be used to call another site.

Plaintext is allowed only when the operator asks for it (``--insecure``) and only on a
loopback address (:func:`check_insecure_address`); such connections carry no identity.

File layout
-----------
``geodml certs init DIR`` writes the CA::

    DIR/ca.pem      the CA certificate: copy it to every site and coordinator
    DIR/ca.key      the CA private key (mode 0600): keep it on the machine that issues

``geodml certs issue DIR NAME --role site|coordinator`` writes, in ``--out`` (default
``DIR``)::

    <name>.pem      the certificate of NAME, signed by DIR/ca.pem
    <name>.key      its private key (mode 0600): copy it only to NAME's machine

A process is configured with three paths, :class:`TlsFiles` ``(ca, cert, key)``.
Keys are ECDSA P-256, stored unencrypted in PKCS#8 PEM and protected by file mode.

Target names
------------
A coordinator's channel to site ``a`` checks the name ``a.site.geodml.invalid`` in the
server certificate (``grpc.ssl_target_name_override``), not the dialed host: a site can
be reached through a tunnel or a load balancer, and an address that reaches the wrong
site is refused. :func:`secure_channel` without ``site`` checks the dialed host instead
(gRPC's default). When a handshake is refused, :func:`peer_certificate` connects once
more, outside gRPC, only to say who answered in the error message.

Modules: :mod:`~geodml.wire.tls.identity` (roles, identity names),
:mod:`~geodml.wire.tls.files` (one process's files, checked),
:mod:`~geodml.wire.tls.ca` (the CA: init and issue),
:mod:`~geodml.wire.tls.channel` (credentials and the one gRPC channel builder).
"""

from geodml.wire.tls.ca import (
    CaPaths,
    IssuedPaths,
    init_ca,
    issue,
)
from geodml.wire.tls.channel import (
    CoordinatorCredentials,
    channel_credentials,
    channel_options,
    check_insecure_address,
    identity_options,
    peer_certificate,
    peer_identity,
    secure_channel,
    server_credentials,
    site_channel,
)
from geodml.wire.tls.files import (
    TlsFiles,
)
from geodml.wire.tls.identity import (
    CA_CERT_FILE,
    CA_KEY_FILE,
    DEFAULT_HOSTS,
    IDENTITY_DOMAIN,
    ROLES,
    SITE_IDENTITY_SUFFIX,
    CertIdentity,
    Role,
    certificate_identity,
    site_identity_name,
)

__all__ = [
    "CA_CERT_FILE",
    "CA_KEY_FILE",
    "DEFAULT_HOSTS",
    "IDENTITY_DOMAIN",
    "ROLES",
    "SITE_IDENTITY_SUFFIX",
    "CaPaths",
    "CertIdentity",
    "CoordinatorCredentials",
    "IssuedPaths",
    "Role",
    "TlsFiles",
    "certificate_identity",
    "channel_credentials",
    "channel_options",
    "check_insecure_address",
    "identity_options",
    "init_ca",
    "issue",
    "peer_certificate",
    "peer_identity",
    "secure_channel",
    "server_credentials",
    "site_channel",
    "site_identity_name",
]
