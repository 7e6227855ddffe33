import uuid

import pytest

from loom.local.s3 import EmbeddedS3


@pytest.fixture(scope="module")
def storage():
    server = EmbeddedS3().start()
    yield server.storage()
    server.stop()


@pytest.fixture
def ns():
    return "lin-" + uuid.uuid4().hex[:8]
