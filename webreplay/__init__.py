"""Web replay for experiment 2: recorded pages (HAR and Mahimahi corpora), origin servers, DNS, local CA."""
