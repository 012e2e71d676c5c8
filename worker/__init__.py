"""timebok: the integration worker between the patient portal and clinic EPJ systems."""
