"""HTTP routes: thin translations to :mod:`incisive.platform.services`."""
