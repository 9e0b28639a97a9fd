"""The AWS stack's pseudonymisation key lives in Secrets Manager; the program creates the
secret without a value and the first reader sets it (ml/clouds/aws/secrets.py)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from contract import privacy
from ml.clouds.aws.secrets import pseudonym_key
from tests.integration.aws_fixtures import client, fake_credentials, moto_backend


def test_the_first_reader_sets_the_key_and_every_reader_gets_the_same(monkeypatch, tmp_path):
    fake_credentials(monkeypatch, tmp_path)
    with moto_backend("in-process"):
        sm = client("secretsmanager")
        arn = sm.create_secret(Name="tandem-dev/pseudonym-key")["ARN"]  # as Pulumi makes it
        with ThreadPoolExecutor(6) as pool:
            keys = set(pool.map(lambda _: pseudonym_key(client("secretsmanager"), arn)(), range(6)))
        assert len(keys) == 1
        (key,) = keys
        assert len(key) == privacy.KEY_BYTES
        versions = sm.list_secret_version_ids(SecretId=arn)["Versions"]
        assert len(versions) == 1, "a second first-reader must not add a second key"
        assert pseudonym_key(client("secretsmanager"), arn)() == key
