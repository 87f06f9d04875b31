"""Unsubscribing from the weekly summaries: signed links, no login (RFC 8058 one-click).

Each summary carries ``List-Unsubscribe: <SITE_URL/summaries/unsubscribe/<token>/>``
with ``List-Unsubscribe-Post: List-Unsubscribe=One-Click`` and the same link
in its body. The token is the user's id signed with ``SECRET_KEY``
(``django.core.signing``, its own salt), so:

* a forged or tampered token fails the signature: 400, and the page says
  nothing about who the link was for or whether such a member exists;
* a signed token for a user that no longer exists: 404, the same words;
* a replay of a valid token is harmless: opting out twice records once.

``GET`` shows a confirmation page (link scanners and previews fetch links;
they must not unsubscribe anyone); ``POST`` unsubscribes. RFC 8058's
one-click POST comes from the mail provider without a CSRF token, so the
view is CSRF-exempt: the signed token is what authorises the request.
"""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core import signing
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_http_methods

from contributions.models import SummaryOptOut
from contributions.services import opt_out_of_summaries

SALT = "contributions.summaries.unsubscribe"
TEMPLATE = "contributions/unsubscribe.html"


def make_token(user_id: int) -> str:
    """The signed token of ``user_id`` for its unsubscribe link."""
    return signing.dumps(user_id, salt=SALT)


def unsubscribe_url(user_id: int) -> str:
    """The absolute one-click unsubscribe URL of ``user_id``, on ``SITE_URL``."""
    return str(settings.SITE_URL).rstrip("/") + reverse("contributions:unsubscribe", args=[make_token(user_id)])


@csrf_exempt
@require_http_methods(["GET", "POST"])
def unsubscribe(request, token: str):
    """GET: confirm page; POST (the page's button, or a mail client's one-click): opt out. See the module docstring."""
    try:
        user_id = signing.loads(token, salt=SALT)
    except signing.BadSignature:
        return render(request, TEMPLATE, {"state": "invalid"}, status=400)
    user = get_user_model().objects.filter(pk=user_id).first() if isinstance(user_id, int) else None
    if user is None:
        return render(request, TEMPLATE, {"state": "invalid"}, status=404)
    if request.method == "GET":
        already = SummaryOptOut.objects.filter(user=user).exists()
        return render(request, TEMPLATE, {"state": "done" if already else "confirm"})
    one_click = request.POST.get("List-Unsubscribe") == "One-Click"
    opt_out_of_summaries(user=user, source=SummaryOptOut.Source.ONE_CLICK if one_click
                         else SummaryOptOut.Source.EMAIL_LINK)
    return render(request, TEMPLATE, {"state": "done"})
