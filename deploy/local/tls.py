#!/usr/bin/env python3
"""A local certificate authority and a server certificate for the Kinesis
emulator's TLS port (the one kinesis-local ships names no host: no client that
checks names accepts it).

    tls.py DIR    writes, unless they exist:
                  DIR/ca.pem       the CA certificate: AWS_CA_BUNDLE for clients
                  DIR/server.json  the server key and certificate (CN and SANs
                                   localhost and 127.0.0.1), signed by the CA, in
                                   kinesis-local's format (KINESIS_MOCK_CERT_PATH)

Runs with the emulators' venv (moto brings `cryptography`).
"""

import datetime
import ipaddress
import json
import os
import sys

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


def name(common_name):
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def main(folder):
    ca_path, server_path = os.path.join(folder, "ca.pem"), os.path.join(folder, "server.json")
    if os.path.exists(ca_path) and os.path.exists(server_path):
        return
    os.makedirs(folder, exist_ok=True)
    now = datetime.datetime.now(datetime.timezone.utc)
    valid = dict(not_valid_before=now - datetime.timedelta(days=1), not_valid_after=now + datetime.timedelta(days=3650))

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder(issuer_name=name("stream-worker local CA"), subject_name=name("stream-worker local CA"),
                                public_key=ca_key.public_key(), serial_number=x509.random_serial_number(), **valid)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                                     key_encipherment=False, data_encipherment=False, key_agreement=False,
                                     encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    # RSA: the emulator's JVM-style TLS stack (Scala.js on Node) takes PKCS#8 RSA keys.
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    server = (
        x509.CertificateBuilder(issuer_name=ca.subject, subject_name=name("localhost"), public_key=key.public_key(),
                                serial_number=x509.random_serial_number(), **valid)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                    x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    pem = lambda cert: cert.public_bytes(serialization.Encoding.PEM).decode()
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
    with open(server_path + ".tmp", "w") as f:
        json.dump({"server": {"key": key_pem, "cert": pem(server)}}, f, indent=2)
    with open(ca_path + ".tmp", "w") as f:
        f.write(pem(ca))
    os.replace(server_path + ".tmp", server_path)
    os.replace(ca_path + ".tmp", ca_path)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
