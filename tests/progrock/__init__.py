"""ProgRock (../shared/seeds/realtime-progress-updates.txt) ported to headrace consumers."""
