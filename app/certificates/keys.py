"""The key ring as a route dependency (`core.signing` reads the configured keys once per change)."""

from typing import Annotated

from fastapi import Depends, Request

from app.errors import ProblemError
from core.signing import KeyRing, SigningKeyError, keyring_for


def get_keyring(request: Request) -> KeyRing:
    try:
        return keyring_for(request.app.state.settings)
    except SigningKeyError as error:
        raise ProblemError(
            503, f"the signing keys are unusable: {error}", slug="signing-keys-unusable"
        ) from None


KeyRingDep = Annotated[KeyRing, Depends(get_keyring)]
