"""The words for installs and revenue that no campaign owns, defined once.

`platform` (and `campaign_id`) take these values beside the registered ad platforms' names:

- ORGANIC: installs the MMP attributes to no paid touch (its organic report), and their revenue.
- RESTRICTED: paid installs whose network withholds user-level data: the MMP reports their media
  source as "restricted" with empty campaign fields, so neither they nor their revenue can be
  tied to a campaign (https://support.appsflyer.com/hc/en-us/articles/360006868017).
- UNATTRIBUTED: revenue of users with no install on record (no MMP row carries their id).
- OTHER: paid installs from a media source no platform is mapped to.
"""

from __future__ import annotations

ORGANIC = "organic"
RESTRICTED = "restricted"
UNATTRIBUTED = "unattributed"
OTHER = "other"

#: The MMP's media source for installs whose network withholds user-level data (AppsFlyer).
RESTRICTED_MEDIA_SOURCE = "restricted"

#: Install buckets that are not campaigns: each is one row keyed by its own name
#: (platform = campaign_id = campaign_name = the bucket), with no adset or ad.
INSTALL_BUCKETS: tuple[str, ...] = (ORGANIC, RESTRICTED)
