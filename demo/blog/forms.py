from django import forms

from .models import Post


class PostForm(forms.ModelForm):
    class Meta:
        model = Post
        fields = ["title", "body"]
        widgets = {
            "title": forms.TextInput(
                attrs={"placeholder": "What happened?", "autocomplete": "off"}
            ),
            "body": forms.Textarea(attrs={"rows": 4, "placeholder": "Tell the readers…"}),
        }
