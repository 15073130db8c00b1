"""Survey cutout services, the engines of `hyrax download` (libhyrax/stages/download.py).

    base.py           the Provider base class (the extension point) and its registry
    hsc.py            `hsc`: the HSC data release's cutout service (tar of FITS, basic auth)
    legacysurvey.py   `legacysurvey`: the DESI Legacy Surveys viewer (one FITS cube per object)
    url_template.py   `url_template`: any service with one GET per object and band
    soda.py           `soda`: any IVOA SODA cutout service (+ SIAv2 image lookup); `rubin`: the Rubin
                      Science Platform's, a preset of it (bearer token from the environment)
    fetch.py          the HTTP engine: a few connections, retries with backoff, answers in request order
    fits_bytes.py     FITS images from the bytes a service sent (strict, fast; astropy for the rest)
    catalog.py        the catalogue of objects to fetch, checked
    store.py          cutouts.h5 and the download record (download.h5), committed so a run resumes exactly
"""

from libhyrax.surveys.base import PROVIDERS, Failed, Fetched, Missing, Provider, Rejected, Request, Target
from libhyrax.surveys.fits_bytes import BadFits, read_images

__all__ = [
    "PROVIDERS",
    "BadFits",
    "Failed",
    "Fetched",
    "Missing",
    "Provider",
    "Rejected",
    "Request",
    "Target",
    "read_images",
]
