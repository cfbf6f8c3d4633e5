"""The CRM's own pages: a business's dashboard (with the plugins' boxes) and a lead form."""

from __future__ import annotations

from django import forms
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render

from .models import Business, Lead


class LeadForm(forms.ModelForm):
    class Meta:
        model = Lead
        fields = ["name", "email", "company", "value"]


def _business(request: HttpRequest) -> Business:
    context = getattr(request, "plugins_context", None)
    if context is None:
        raise Http404("open a business's site, such as http://acme.localhost:8000/")
    return Business.objects.get(slug=context.tenant)


def dashboard(request: HttpRequest) -> HttpResponse:
    """The business's home page: its latest leads and the plugins' widgets."""
    if getattr(request, "plugins_context", None) is None:
        return render(request, "business/index.html", {"businesses": Business.objects.all()})
    business = _business(request)
    return render(
        request,
        "business/dashboard.html",
        {"business": business, "leads": business.leads.all()[:20], "form": LeadForm()},
    )


def new_lead(request: HttpRequest) -> HttpResponse:
    """Save a lead: ``lead_created`` reaches the business's plugins once it is committed."""
    business = _business(request)
    form = LeadForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        lead = form.save(commit=False)
        lead.business = business
        lead.save()
        return redirect("dashboard")
    return render(request, "business/dashboard.html", {"business": business, "form": form})
