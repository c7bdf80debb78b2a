"""Mock layers (DSA, MLA, MoE) and E2E models built from them; installed as align_mock."""
