#!/usr/bin/env python3
"""Keys and tokens made by an implementation Portico does not share code with (PyJWT and
`cryptography`), for Portico's end-to-end tests of JWT verification.

    jwt_tool.py keygen ALG KID            -> {"private_pem": ..., "jwk": {...public JWK...}}
    jwt_tool.py sign ALG PRIVATE KID CLAIMS [HEADERS]
                                          -> the compact token. PRIVATE is a PEM private key
                                             (or, for HS*, the secret); CLAIMS and HEADERS are
                                             JSON objects; KID "" leaves `kid` out.
    jwt_tool.py none CLAIMS               -> an unsigned token (`alg: none`), built by hand
                                             since PyJWT refuses to make one.
    jwt_tool.py hmac-with-public ALG PUBLIC_PEM KID CLAIMS
                                          -> an HS* token keyed with a public key's PEM bytes
                                             (the key-confusion attack).
    jwt_tool.py verify TOKEN JWKS AUDIENCE ISSUER
                                          -> the claims of a token Portico issued, verified by
                                             PyJWT with the key set Portico publishes.
    jwt_tool.py batch                     -> reads a JSON list of commands on stdin, each a
                                             list of the arguments above (["sign", "ES256",
                                             ...], claims and headers as JSON objects), and
                                             prints a JSON list of their results: one Python
                                             start for many tokens.

Output on stdout; errors on stderr with a non-zero exit. `.ci/run` installs PyJWT and
cryptography.
"""

import base64
import json
import sys

try:
    import jwt
    from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
except ImportError:
    sys.stderr.write(
        "MISSING PyJWT/cryptography: install them with "
        "`python3 -m pip install 'PyJWT[crypto]'` (.ci/run does)\n"
    )
    sys.exit(3)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def keygen(alg: str, kid: str) -> dict:
    if alg.startswith(("RS", "PS")):
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        jwk = json.loads(RSAAlgorithm.to_jwk(key.public_key()))
    elif alg == "ES256":
        key = ec.generate_private_key(ec.SECP256R1())
        jwk = json.loads(ECAlgorithm.to_jwk(key.public_key()))
    elif alg == "ES384":
        key = ec.generate_private_key(ec.SECP384R1())
        jwk = json.loads(ECAlgorithm.to_jwk(key.public_key()))
    elif alg == "EdDSA":
        key = ed25519.Ed25519PrivateKey.generate()
        jwk = json.loads(OKPAlgorithm.to_jwk(key.public_key()))
    else:
        raise SystemExit(f"unsupported algorithm {alg}")
    jwk["kid"] = kid
    jwk["alg"] = alg
    jwk["use"] = "sig"
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    public_pem = (
        key.public_key()
        .public_bytes(
            serialization.Encoding.PEM,
            serialization.PublicFormat.SubjectPublicKeyInfo,
        )
        .decode()
    )
    return {"private_pem": pem, "public_pem": public_pem, "jwk": jwk}


def run(args):
    command = args[0]
    if command == "keygen":
        return keygen(args[1], args[2])
    if command == "sign":
        alg, private, kid, claims = args[1], args[2], args[3], args[4]
        headers = dict(args[5]) if len(args) > 5 else {}
        if kid:
            headers["kid"] = kid
        return jwt.encode(claims, private, algorithm=alg, headers=headers)
    if command == "none":
        header = b64url(json.dumps({"alg": "none", "typ": "JWT"}).encode())
        payload = b64url(json.dumps(args[1]).encode())
        return f"{header}.{payload}."
    if command == "hmac-with-public":
        import hashlib
        import hmac

        alg, public_pem, kid, claims = args[1], args[2], args[3], args[4]
        digest = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}[alg]
        header = {"alg": alg, "typ": "JWT"}
        if kid:
            header["kid"] = kid
        signing_input = (
            b64url(json.dumps(header).encode()) + "." + b64url(json.dumps(claims).encode())
        )
        signature = hmac.new(public_pem.encode(), signing_input.encode(), digest).digest()
        return f"{signing_input}.{b64url(signature)}"
    if command == "verify":
        # A token Portico issued, checked by PyJWT against Portico's published key set.
        token, jwks, audience, issuer = args[1], args[2], args[3], args[4]
        header = jwt.get_unverified_header(token)
        key = next(k for k in jwks["keys"] if k["kid"] == header["kid"])
        public = jwt.PyJWK(key).key
        return jwt.decode(
            token,
            public,
            algorithms=[key["alg"]],
            audience=audience,
            issuer=issuer,
            options={"require": ["exp", "iat", "iss", "aud", "sub"]},
        )
    raise SystemExit(f"unknown command {command}")


def main(argv):
    if argv[1] == "batch":
        print(json.dumps([run(args) for args in json.load(sys.stdin)]))
        return
    args = [argv[1]] + [
        json.loads(arg) if arg.startswith("{") else arg for arg in argv[2:]
    ]
    result = run(args)
    print(result if isinstance(result, str) else json.dumps(result))


if __name__ == "__main__":
    main(sys.argv)
