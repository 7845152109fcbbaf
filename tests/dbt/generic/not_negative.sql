{#- Fails with the rows whose `column_name` is below zero: a fee line is never negative
    (docs/billing-clock.md, "Negative usage"). -#}
{% test not_negative(model, column_name) %}

select {{ column_name }}
from {{ model }}
where {{ column_name }} < 0

{% endtest %}
