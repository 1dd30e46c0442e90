"""Django settings for the test suite. Each test area may add what it needs; keep existing lines."""

SECRET_KEY = "headrace-tests-not-secret"
DEBUG = False
ALLOWED_HOSTS = ["localhost", "127.0.0.1", "testserver"]
USE_TZ = True

INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "headrace",
]

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": ":memory:",
        "TEST": {"NAME": ":memory:"},
    }
}

CHANNEL_LAYERS = {
    "default": {"BACKEND": "headrace.layers.InMemoryChannelLayer"},
}

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# -- consumers, routing and the interface server (issue 4) ---------------------------------
INSTALLED_APPS += ["django.contrib.staticfiles", "tests.chatapp"]
ROOT_URLCONF = "tests.chatapp.urls"
ASGI_APPLICATION = "tests.chatapp.asgi.application"
STATIC_URL = "/static/"
MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
]
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "APP_DIRS": True,
        "OPTIONS": {"context_processors": []},
    }
]
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

# -- durable tasks (issue 13) ----------------------------------------------------------------
INSTALLED_APPS += ["tests.blogapp"]
TASKS = {
    "default": {
        "BACKEND": "headrace.tasks.backends.memory.MemoryTaskBackend",
        "QUEUES": ["default", "emails"],
    }
}

# -- the database task backend's admin (issue 15) ---------------------------------------------
INSTALLED_APPS += ["django.contrib.admin", "django.contrib.messages"]
MIDDLEWARE += ["django.contrib.messages.middleware.MessageMiddleware"]
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]
