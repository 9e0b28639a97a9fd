"""Building blocks every cloud's program uses (argument checks, ...); no cloud SDK here."""
