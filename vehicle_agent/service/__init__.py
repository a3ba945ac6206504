"""Running as a service: systemd notification and watchdog, Prometheus metrics, status."""
