"""Routes for this area are added by the engineer who owns it."""

from fastapi import APIRouter

router = APIRouter()
