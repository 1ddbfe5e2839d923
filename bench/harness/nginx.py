"""nginx as shipped (deploy/nginx/coalition.conf) in front of a local gunicorn, on loopback
ports, with a self-signed certificate: started, awaited and stopped with the benchmark."""

from __future__ import annotations

import datetime
import ipaddress
import shutil
import socket
import ssl
import time
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from .client import free_port
from .processes import REPO, BenchError, Processes

CONF = REPO / "deploy" / "nginx" / "coalition.conf"


def self_signed(folder: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def start_nginx(procs: Processes, folder: Path, upstream: str) -> tuple[int, ssl.SSLContext]:
    """nginx in front of ``upstream`` (host:port): its HTTPS port, and a TLS context that
    trusts its certificate."""
    cert, key = self_signed(folder)
    https, plain = free_port(), free_port()
    site = CONF.read_text()
    for old, new in {"server 127.0.0.1:8000 ": f"server {upstream} ",
                     "    listen 80;\n": f"    listen 127.0.0.1:{plain};\n",
                     "    listen [::]:80;\n": "",
                     "    listen 443 ssl http2;\n": f"    listen 127.0.0.1:{https} ssl http2;\n",
                     "    listen [::]:443 ssl http2;\n": "",
                     "/etc/ssl/coalition/fullchain.pem": str(cert),
                     "/etc/ssl/coalition/privkey.pem": str(key)}.items():
        if site.count(old) != 1:
            raise BenchError(f"{old!r} is no longer in {CONF}")
        site = site.replace(old, new)
    (folder / "coalition.conf").write_text(site)
    temp = folder / "temp"
    temp.mkdir(exist_ok=True)
    (folder / "nginx.conf").write_text(f"""
worker_processes 1;
pid {folder}/nginx.pid;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {temp}/body;
    proxy_temp_path {temp}/proxy;
    fastcgi_temp_path {temp}/fastcgi;
    uwsgi_temp_path {temp}/uwsgi;
    scgi_temp_path {temp}/scgi;
    include {folder}/coalition.conf;
}}
""")
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    error_log = folder / "nginx-error.log"
    process = procs.start([nginx, "-p", str(folder), "-c", str(folder / "nginx.conf"), "-e",
                           str(error_log), "-g", "daemon off; user root;"],
                          env={"PATH": "/usr/sbin:/usr/bin:/bin"}, log=folder / "nginx.out")
    context = ssl.create_default_context(cafile=str(cert))
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise BenchError(f"nginx exited with {process.returncode}: {error_log.read_text()}")
        try:
            with context.wrap_socket(socket.create_connection(("127.0.0.1", https), timeout=2),
                                     server_hostname="127.0.0.1"):
                return https, context
        except OSError:
            time.sleep(0.1)
    raise BenchError("nginx did not accept TLS connections within 15 s")
